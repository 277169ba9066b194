//! Any bytes as appconf.xml, checked against the example cluster: never a panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use cl_config::{load_app, load_cluster, ClusterConfig, FileKind, Host};
use libfuzzer_sys::fuzz_target;

struct EveryFileExists;

impl Host for EveryFileExists {
    fn file_kind(&self, _path: &Path) -> FileKind {
        FileKind::Executable
    }
}

fn cluster() -> &'static ClusterConfig {
    static CLUSTER: OnceLock<ClusterConfig> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let text = include_bytes!("../../examples/cluster1/etc/cluster/clconf.xml");
        load_cluster("clconf.xml", text, &EveryFileExists).config.expect("the example cluster loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let loaded = load_app("appconf.xml", data, "apache", cluster(), &[], &EveryFileExists);
    assert!(loaded.config.is_none() || loaded.errors().next().is_none());
});
