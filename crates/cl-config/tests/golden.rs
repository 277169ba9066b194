//! Golden tests for configuration messages: every `*.xml` under `golden/clconf` and
//! `golden/appconf` is loaded and its diagnostics compared, line for line, with the `.expected`
//! file beside it. `CL_UPDATE_GOLDEN=1 cargo test -p cl-config --test golden` rewrites the
//! expected files; review the diff before committing.
//!
//! A case whose name starts with `ok-` must load (warnings allowed); every other case must be
//! rejected. Application cases are checked against `golden/appconf/cluster.xml.fixture` and
//! the fake node filesystem in [`FakeHost`], whose OCF agents are the real meta-data of
//! `ocf:heartbeat:Dummy` and `ocf:heartbeat:IPaddr2` saved in `golden/agents/`.

use std::path::{Path, PathBuf};

use cl_config::agent::AgentMeta;
use cl_config::resources::Resource;
use cl_config::{load_app, load_cluster, AgentLookup, ClusterConfig, FileKind, Host};

/// The node's files as the golden cases assume them.
struct FakeHost;

impl Host for FakeHost {
    fn file_kind(&self, path: &Path) -> FileKind {
        match path.to_str().unwrap_or("") {
            "/etc/cluster/cluster.key" => FileKind::NotExecutable,
            "/etc/cluster/apache/start"
            | "/etc/cluster/apache/stop"
            | "/etc/cluster/apache/check" => FileKind::Executable,
            "/etc/cluster/apache/notes.txt" => FileKind::NotExecutable,
            "/etc/cluster/apache/shared-start" => FileKind::Executable,
            "/usr/sbin/fence_ipmilan" | "/usr/sbin/fence_linuxha_lab" => FileKind::Executable,
            "/usr/sbin/fence_notes.txt" => FileKind::NotExecutable,
            "/etc/init.d/myservice" => FileKind::Executable,
            "/etc/init.d/README" => FileKind::NotExecutable,
            "/etc/cluster/apache" | "/etc" => FileKind::Directory,
            _ => FileKind::Missing,
        }
    }

    /// One script anyone may change, as a real node's strict-mode check reports it.
    fn untrusted(&self, path: &Path, _secret: bool) -> Option<String> {
        (path == Path::new("/etc/cluster/apache/shared-start")).then(|| {
            "/etc/cluster/apache/shared-start is writable by group or others (owner root (uid 0), mode 0777); run `chmod go-w /etc/cluster/apache/shared-start` (or set LINUXHA_STRICT_MODES=no)".to_string()
        })
    }

    fn ocf_agent(&self, provider: &str, agent: &str) -> AgentLookup {
        let known = ["Dummy", "IPaddr2"];
        if provider != "heartbeat" || !known.contains(&agent) {
            return AgentLookup::Missing(format!(
                "does not exist: /usr/lib/ocf/resource.d/{provider}/{agent} is missing"
            ));
        }
        let text = std::fs::read_to_string(golden_dir("agents").join(format!("{agent}.xml")))
            .expect("saved meta-data readable");
        AgentLookup::Found(AgentMeta::parse(&text).expect("saved meta-data parses"))
    }

    /// Dummy's validate-all fails when its state directory cannot be written.
    fn validate_resource(&self, resource: &Resource) -> Result<(), String> {
        match resource.params.get("state") {
            Some(state) if state.starts_with("/nonexistent/") => {
                Err(format!("exit 2 (invalid arguments): State file \"{state}\" is not writable"))
            }
            _ => Ok(()),
        }
    }
}

/// Fewest cases per file kind: the suite must keep covering the checks.
const MIN_CASES: usize = 12;

fn golden_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(kind)
}

fn cases(kind: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(golden_dir(kind))
        .expect("golden directory exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    found.sort();
    found
}

fn fixture_cluster() -> ClusterConfig {
    let path = golden_dir("appconf").join("cluster.xml.fixture");
    let bytes = std::fs::read(&path).expect("fixture readable");
    let loaded = load_cluster("cluster.xml", &bytes, &FakeHost);
    loaded.config.unwrap_or_else(|| panic!("fixture must load: {:?}", loaded.diagnostics))
}

/// Compare (or rewrite) one case; returns a description of the mismatch, if any.
fn check(case: &Path, actual: &str, loaded_ok: bool) -> Option<String> {
    let name = case.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let must_load = name.starts_with("ok-");
    if must_load != loaded_ok {
        return Some(format!(
            "{name}: expected it to {}",
            if must_load { "load" } else { "be rejected" }
        ));
    }
    let expected_path = case.with_extension("expected");
    if std::env::var_os("CL_UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, actual).expect("write expected");
        return None;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if expected != actual {
        return Some(format!("{name}:\n--- expected\n{expected}--- actual\n{actual}"));
    }
    None
}

fn render(diagnostics: &[cl_config::Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

#[test]
fn cluster_configuration_messages_match_the_golden_files() {
    let mut failures = Vec::new();
    let all = cases("clconf");
    for case in &all {
        let name = case.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let bytes = std::fs::read(case).expect("case readable");
        let loaded = load_cluster(name, &bytes, &FakeHost);
        failures.extend(check(case, &render(&loaded.diagnostics), loaded.config.is_some()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(all.len() >= MIN_CASES, "expected at least {MIN_CASES} cases, found {}", all.len());
}

#[test]
fn application_configuration_messages_match_the_golden_files() {
    let cluster = fixture_cluster();
    let other = {
        let bytes = std::fs::read(golden_dir("appconf").join("other-app.xml.fixture"))
            .expect("fixture readable");
        let loaded = load_app("other.xml", &bytes, "webmail", &cluster, &[], &FakeHost);
        loaded
            .config
            .unwrap_or_else(|| panic!("other app fixture must load: {:?}", loaded.diagnostics))
    };
    let mut failures = Vec::new();
    let all = cases("appconf");
    for case in &all {
        let name = case.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let bytes = std::fs::read(case).expect("case readable");
        let loaded =
            load_app(name, &bytes, "apache", &cluster, std::slice::from_ref(&other), &FakeHost);
        failures.extend(check(case, &render(&loaded.diagnostics), loaded.config.is_some()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(all.len() >= MIN_CASES, "expected at least {MIN_CASES} cases, found {}", all.len());
}

/// The fence devices and the arbitrator survive the built JSON artefact, and an artefact built
/// before they existed still reads (as "none configured").
#[test]
fn fencing_and_arbitrator_survive_the_built_artefact() {
    let case = golden_dir("clconf").join("ok-fenced-and-arbitrator.xml");
    let bytes = std::fs::read(&case).expect("case readable");
    let loaded = load_cluster("clconf.xml", &bytes, &FakeHost);
    let config = loaded.config.expect("loads");
    let arbitrator = config.arbitrator.expect("arbitrator");
    assert_eq!(arbitrator.address, "10.10.0.1:9905".parse().expect("literal"));
    assert_eq!(arbitrator.lease, Some(std::time::Duration::from_secs(5)));
    let fence = config.nodes[0].fence.clone().expect("node1 fence");
    assert_eq!(fence.agent, PathBuf::from("/usr/sbin/fence_ipmilan"));
    assert_eq!(fence.timeout, std::time::Duration::from_secs(30));
    assert_eq!(fence.retry, std::time::Duration::from_secs(1));
    assert_eq!(fence.poweroff, std::time::Duration::from_secs(3));
    assert_eq!(fence.options[0], ("ip".to_string(), "10.30.0.11".to_string()));
    assert_eq!(fence.options.len(), 3);
    let node2 = config.nodes[1].fence.clone().expect("node2 fence");
    assert_eq!(node2.timeout, cl_config::clconf::FenceDevice::DEFAULT_TIMEOUT);
    assert_eq!(node2.retry, cl_config::clconf::FenceDevice::DEFAULT_RETRY);
    assert_eq!(node2.poweroff, cl_config::clconf::FenceDevice::DEFAULT_POWEROFF);

    let built = cl_config::Built::after(None, 1, "node1".into(), String::new(), config.clone());
    let json = serde_json::to_string(&built).expect("serialises");
    let back: cl_config::Built<ClusterConfig> = serde_json::from_str(&json).expect("parses");
    assert_eq!(back.config, config);

    // An artefact from before fencing: the new fields are simply absent.
    let mut old: serde_json::Value = serde_json::to_value(&built).expect("value");
    old["config"].as_object_mut().expect("object").remove("arbitrator");
    for node in old["config"]["nodes"].as_array_mut().expect("nodes") {
        node.as_object_mut().expect("node").remove("fence");
    }
    let back: cl_config::Built<ClusterConfig> = serde_json::from_value(old).expect("old parses");
    assert!(back.config.arbitrator.is_none());
    assert!(back.config.nodes.iter().all(|n| n.fence.is_none()));

    // An artefact from before `poweroff`: the devices read with the default.
    let mut old: serde_json::Value = serde_json::to_value(&built).expect("value");
    for node in old["config"]["nodes"].as_array_mut().expect("nodes") {
        node["fence"].as_object_mut().expect("fence").remove("poweroff");
    }
    let back: cl_config::Built<ClusterConfig> = serde_json::from_value(old).expect("old parses");
    let fence = back.config.nodes[0].fence.clone().expect("node1 fence");
    assert_eq!(fence.poweroff, cl_config::clconf::FenceDevice::DEFAULT_POWEROFF);
}

/// Without `poweroff`, a device whose agent timeout is shorter than the default power-off time
/// gets its timeout: a power-off never takes longer than the agent may run.
#[test]
fn the_default_poweroff_never_exceeds_the_agent_timeout() {
    let case = golden_dir("clconf").join("ok-fenced-only.xml");
    let text = std::fs::read_to_string(&case).expect("case readable");
    let text = text.replace(
        r#"<fence agent="/usr/sbin/fence_ipmilan">"#,
        r#"<fence agent="/usr/sbin/fence_ipmilan" timeout="1s">"#,
    );
    let loaded = load_cluster("clconf.xml", text.as_bytes(), &FakeHost);
    let config = loaded.config.expect("loads");
    let node2 = config.nodes[1].fence.clone().expect("node2 fence");
    assert_eq!(node2.poweroff, std::time::Duration::from_secs(1));
}

#[test]
fn resource_time_limits_come_from_the_file_then_the_agent_then_the_defaults() {
    use std::time::Duration;
    let cluster = fixture_cluster();
    let bytes = std::fs::read(golden_dir("appconf").join("ok-resources.xml")).expect("readable");
    let loaded = load_app("ok-resources.xml", &bytes, "apache", &cluster, &[], &FakeHost);
    let app = loaded.config.expect("loads");
    assert!(app.start.is_none() && app.stop.is_none());
    let ids: Vec<&str> = app.resources.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["state1", "vip1", "myservice"], "in the file's order");
    let (dummy, vip, lsb) = (&app.resources[0], &app.resources[1], &app.resources[2]);
    let s = Duration::from_secs;
    // Dummy: 20s from its meta-data, the file's 2s interval and 1 restart.
    assert_eq!((dummy.start_timeout, dummy.stop_timeout), (s(20), s(20)));
    assert_eq!((dummy.monitor_interval, dummy.monitor_timeout), (s(2), s(20)));
    assert_eq!(dummy.restarts, 1);
    // IPaddr2: the file's start timeout, the agent's monitor interval (10s).
    assert_eq!((vip.start_timeout, vip.monitor_interval), (s(10), s(10)));
    assert_eq!(vip.params.get("ip").map(String::as_str), Some("10.10.0.150"));
    // LSB: no meta-data; the script defaults, the file's monitor settings.
    assert_eq!((lsb.start_timeout, lsb.monitor_interval, lsb.monitor_timeout), (s(60), s(5), s(3)));
    // The built form keeps the type as written.
    let json = serde_json::to_value(&app).expect("encodes");
    assert_eq!(json["resources"][1]["type"], "ocf:heartbeat:IPaddr2");
}

/// Replicated volumes resolve with their minors and ports allocated around the other
/// application's (webmail: minors 0 and 2, ports 7788 and 7795) and this file's explicit
/// ones; the result survives the built artefact, and an artefact built before replication
/// existed still reads (as "no replicated storage").
#[test]
fn replicated_volumes_resolve_and_survive_the_built_artefact() {
    use cl_config::appconf::AppConfig;
    use cl_config::replication::{AfterSplitBrain, Backing, DiskFailurePolicy, Fencing};
    use std::time::Duration;
    let cluster = fixture_cluster();
    let other_bytes =
        std::fs::read(golden_dir("appconf").join("other-app.xml.fixture")).expect("readable");
    let other = load_app("other.xml", &other_bytes, "webmail", &cluster, &[], &FakeHost)
        .config
        .expect("webmail loads");
    let webmail: Vec<(&str, u32, u16)> =
        other.replicated_volumes().iter().map(|v| (v.resource.as_str(), v.minor, v.port)).collect();
    assert_eq!(webmail, [("webmail-mail", 0, 7788), ("webmail-index", 2, 7795)]);

    let bytes = std::fs::read(golden_dir("appconf").join("ok-replicated.xml")).expect("readable");
    let loaded = load_app("ok-replicated.xml", &bytes, "apache", &cluster, &[other], &FakeHost);
    let app = loaded.config.expect("loads");
    let r = app.replication.clone().expect("replicated");
    assert_eq!(r.fencing, Fencing::ResourceOnly);
    assert_eq!(r.after_split_brain, AfterSplitBrain::DiscardZeroChanges);
    assert_eq!(r.on_disk_failure, DiskFailurePolicy::Move);
    assert_eq!(
        (r.ping_int, r.ping_timeout, r.connect_int, r.timeout),
        (
            Duration::from_secs(3),
            Duration::from_secs(1),
            Duration::from_secs(4),
            Duration::from_millis(2500)
        )
    );
    let vg = r.volume_group.clone().expect("vg");
    assert_eq!((vg.name.as_str(), vg.at.line, vg.at.column), ("apachevg", 16, 5));
    let got: Vec<(&str, u32, u16, &str, u64)> = r
        .volumes
        .iter()
        .map(|v| (v.resource.as_str(), v.minor, v.port, v.net.as_str(), v.resync_rate_kib))
        .collect();
    assert_eq!(
        got,
        [
            ("apache-data", 1, 7790, "private", 50 * 1024),
            ("apache-logs", 3, 7789, "public", 40 * 1024),
            ("apache-vdc", 9, 7797, "private", 50 * 1024),
        ]
    );
    let data = &r.volumes[0];
    assert_eq!(
        data.backing,
        Backing::Lv { vg: "apachevg".into(), lv: "data".into(), size_bytes: 256 << 20 }
    );
    assert_eq!(data.backing.device(), PathBuf::from("/dev/apachevg/data"));
    assert_eq!(data.filesystem.device, PathBuf::from("/dev/drbd1"));
    assert_eq!(data.filesystem.mountpoint, PathBuf::from("/apache/data"));
    assert_eq!((data.filesystem.options.as_str(), data.filesystem.fsck), ("noatime", false));
    assert_eq!(
        data.error("appconf.xml", "size differs on node2 (512M)").to_string(),
        "appconf.xml:18:7: error: <lv name=\"data\">: size differs on node2 (512M)"
    );
    assert_eq!(
        vg.error("appconf.xml", "missing on node2").to_string(),
        "appconf.xml:16:5: error: <vg name=\"apachevg\">: missing on node2"
    );
    let logs = &r.volumes[1];
    assert_eq!(
        logs.backing,
        Backing::Lv { vg: "apachevg".into(), lv: "logs".into(), size_bytes: 1 << 30 }
    );
    assert_eq!((logs.filesystem.fstype.as_str(), logs.filesystem.fsck), ("xfs", true));
    let disk = &r.volumes[2];
    assert_eq!(disk.backing, Backing::Disk { device: "/dev/vdc".into() });
    assert_eq!(disk.element(), "<disk device=\"/dev/vdc\">");
    // The unreplicated filesystem is unchanged; the application mounts all four.
    assert_eq!(app.filesystems.len(), 1);
    assert_eq!(app.mounted_filesystems().count(), 4);

    let built = cl_config::Built::after(None, 1, "node1".into(), String::new(), app.clone());
    let json = serde_json::to_string(&built).expect("serialises");
    let back: cl_config::Built<AppConfig> = serde_json::from_str(&json).expect("parses");
    assert_eq!(back.config, app);
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["config"]["replication"]["fencing"], "resource-only");
    assert_eq!(
        value["config"]["replication"]["volumes"][2]["backing"]["disk"]["device"],
        "/dev/vdc"
    );

    // An artefact from before replicated storage: the field is simply absent.
    let mut old = value;
    old["config"].as_object_mut().expect("object").remove("replication");
    let back: cl_config::Built<AppConfig> = serde_json::from_value(old).expect("old parses");
    assert!(back.config.replication.is_none());
    assert!(back.config.replicated_volumes().is_empty());
}

/// `<metrics/>` alone listens on this node only, on the documented default port; the
/// attributes replace each, and no `<metrics>` serves nothing.
#[test]
fn metrics_endpoint_defaults_to_localhost_and_the_documented_port() {
    use cl_config::clconf::Metrics;
    let listen = |case: &str| {
        let bytes = std::fs::read(golden_dir("clconf").join(case)).expect("case readable");
        let loaded = load_cluster(case, &bytes, &FakeHost);
        loaded.config.expect("loads").metrics.map(|m| m.listen)
    };
    assert_eq!(listen("ok-metrics-default.xml"), Some("127.0.0.1:9949".parse().expect("address")));
    assert_eq!(Metrics::DEFAULT_PORT, 9949);
    assert_eq!(listen("ok-metrics-all-addresses.xml"), Some("[::]:9100".parse().expect("address")));
    assert_eq!(listen("ok-cluster1.xml"), None);
}

#[test]
fn notifiers_keep_file_order_timeouts_and_event_lists() {
    use cl_config::notify::{EventFilter, Notifier};
    use cl_core::notice::EventKind;
    let case = "ok-notify-two-programs.xml";
    let bytes = std::fs::read(golden_dir("clconf").join(case)).expect("case readable");
    let notify = load_cluster(case, &bytes, &FakeHost).config.expect("loads").notify;
    assert_eq!(
        notify,
        vec![
            Notifier {
                program: "/etc/cluster/apache/start".into(),
                timeout: std::time::Duration::from_secs(30),
                events: EventFilter::All,
            },
            Notifier {
                program: "/etc/cluster/notify/webhook.sh".into(),
                timeout: Notifier::DEFAULT_TIMEOUT,
                events: EventFilter::Only(
                    [EventKind::NodeDown, EventKind::AppMoved, EventKind::TakeoverHeldBack].into()
                ),
            },
        ]
    );
    assert!(notify[1].wants(EventKind::AppMoved) && !notify[1].wants(EventKind::NodeUp));
}
