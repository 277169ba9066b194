//! Golden tests for configuration messages: every `*.xml` under `golden/clconf` and
//! `golden/appconf` is loaded and its diagnostics compared, line for line, with the `.expected`
//! file beside it. `CL_UPDATE_GOLDEN=1 cargo test -p cl-config --test golden` rewrites the
//! expected files; review the diff before committing.
//!
//! A case whose name starts with `ok-` must load (warnings allowed); every other case must be
//! rejected. Application cases are checked against `golden/appconf/cluster.xml.fixture` and
//! the fake node filesystem in [`FakeHost`].

use std::path::{Path, PathBuf};

use cl_config::{load_app, load_cluster, ClusterConfig, FileKind, Host};

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
            "/usr/sbin/fence_ipmilan" | "/usr/sbin/fence_linuxha_lab" => FileKind::Executable,
            "/usr/sbin/fence_notes.txt" => FileKind::NotExecutable,
            "/etc/cluster/apache" | "/etc" => FileKind::Directory,
            _ => FileKind::Missing,
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
    assert_eq!(arbitrator.lease, std::time::Duration::from_secs(5));
    let fence = config.nodes[0].fence.clone().expect("node1 fence");
    assert_eq!(fence.agent, PathBuf::from("/usr/sbin/fence_ipmilan"));
    assert_eq!(fence.timeout, std::time::Duration::from_secs(30));
    assert_eq!(fence.retry, std::time::Duration::from_secs(1));
    assert_eq!(fence.options[0], ("ip".to_string(), "10.30.0.11".to_string()));
    assert_eq!(fence.options.len(), 3);
    let node2 = config.nodes[1].fence.clone().expect("node2 fence");
    assert_eq!(node2.timeout, cl_config::clconf::FenceDevice::DEFAULT_TIMEOUT);
    assert_eq!(node2.retry, cl_config::clconf::FenceDevice::DEFAULT_RETRY);

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
}
